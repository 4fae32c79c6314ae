"""The planner language model on the vehicle: prompt/plan format (format.py), the ONNX Runtime
decoder with KV and prefix cache, instruction intents. No torch here."""
