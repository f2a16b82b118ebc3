"""sweeps.data: what a run reads (docs/data.md).

- ``config``: the data set's settings (``DataConfig``, conf/data/*.yaml), checked before anything is opened;
- ``documents``: where the text comes from (the hub, local files, a blob store, the standard library), which
  split a document belongs to, and the tokenizers;
- ``preparation``: a corpus tokenized once, resumably, in worker processes (``python -m sweeps.prepare``);
  ``prepared``: the token files it writes and how training reads them;
- ``batches``: training and evaluation rows of ``seq_len`` tokens, by global position, prepared or streamed.
"""
