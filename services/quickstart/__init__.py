"""The quickstart app: a sharded text search Flow that runs anywhere, with no model download."""
