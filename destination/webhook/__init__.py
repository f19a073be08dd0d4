"""The webhook destination: mapped payloads POSTed in batches to a URL on this machine
(``destination.py``), with its one action (``post.py``)."""
