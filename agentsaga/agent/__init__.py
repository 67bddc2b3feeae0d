"""The ``agent`` step kind: a tool-use loop checkpointed turn by turn (``loop``), its tools
(``tools``), what a crashed attempt left for the next one to continue from (``record``),
its transcript (``transcript``), and external agent CLIs as steps (``external``)."""
