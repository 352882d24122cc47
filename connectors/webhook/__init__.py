"""The ``webhook`` source and the ``http`` sink: CloudEvents over HTTP into and out of the mesh."""
