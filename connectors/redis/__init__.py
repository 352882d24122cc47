"""The ``redis`` source and sink (redis-py; ``pip install 'meshconnect[redis]'``)."""
