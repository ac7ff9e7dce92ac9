"""Amazon SageMaker's data formats, read and written with numpy alone (no SDK, no protobuf).

``recordio``: ``application/x-recordio-protobuf``, the training and batch-transform channels of
the built-in Factorization Machines and k-NN algorithms (its message in ``record_pb``, the
protobuf wire format in ``wire``). ``knn_output``: the jsonlines that a k-NN batch transform
writes, turned into ranked top-x rows.
"""
