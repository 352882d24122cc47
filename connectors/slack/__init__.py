"""The ``slack`` connector: a sink that posts messages through the Web API (``chat.postMessage``,
``chat.update``) and a source that receives the Events API on the worker's shared listener."""
