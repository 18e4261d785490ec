"""Planning, on the driver: before any audio is read, list and fingerprint the input files
and pack work units (`planner`); once every file is decided, split the kept audio into
train/val by group (`split`) and pack the shard groups; and stamp which code shapes the
output (`provenance`). Imports `config`, `measure.audio_io` and `shards` only."""
