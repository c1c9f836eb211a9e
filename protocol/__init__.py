"""Wire protocol shared by the agent and the collector: envelopes, topics and keys."""
