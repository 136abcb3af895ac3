"""The embedded default: a procedural math task and a tiny Qwen2 policy built offline (see `task` and
`build`)."""
