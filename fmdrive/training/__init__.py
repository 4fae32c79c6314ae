"""Training (torch==2.13.0, never needed on the vehicle): datasets from simulator bags, encoders,
distillation, ONNX export and INT8 quantisation. Empty on purpose until the learned encoders arrive."""
