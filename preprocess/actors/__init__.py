"""The work on Ray: start or join the cluster (`ray_session`), send units and shard-group
writes to the actor pool (`schedule`), and what one actor does with a work unit (`unit`:
scan, decide, segment, encode, each file's `records` line) or a shard group (`shard_group`,
ordered by `interleave`). Imports `plan`, `measure` and `shards`; never `out`."""
