"""The ``mongodb`` source and sink (pymongo; ``pip install 'meshconnect[mongodb]'``)."""
