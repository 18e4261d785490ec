"""Planning, on the driver before any audio is read: list and fingerprint the input files
(`planner`), split them into train/val by group (`split`), and stamp which code shapes the
output (`provenance`). Imports `config`, `measure.audio_io` and `shards` only."""
