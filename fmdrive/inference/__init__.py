"""Inference backends behind one protocol (DESIGN.md §5): ONNX Runtime here, TensorRT + pycuda on
the Jetson. Empty on purpose until the learned encoders arrive (next issue); the lidar_encoder node's
`backend` parameter already names the choice and refuses anything but 'classical' until then."""
