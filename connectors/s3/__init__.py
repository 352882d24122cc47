"""The built-in ``s3`` connector: a sink that writes partitioned, rotated objects exactly once
(deterministic object names), and a source that reads objects under a prefix in key order and
resumes mid-object. ``plugin`` registers both; ``config`` holds their config models; the
client library (boto3, pyarrow for Parquet) is imported only when a pipeline uses them.
"""
