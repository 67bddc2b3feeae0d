"""Who drives the saga core besides this process: the Temporal runner (a generic workflow,
its activities, the worker, the client). The local runner is ``agentsaga/engine.py``."""
