"""Inference behind one protocol (DESIGN.md §5): model cards, ONNX Runtime and TensorRT (+pycuda)
backends, TensorRT plans with manifests, and the decoders of each io_convention.

    card.py                 engines/<model>/card.yaml: schema, checks against the ONNX files (CardError)
    conventions.py          the tensor layout each io_convention promises
    backend.py              Backend protocol, make_backend(card, precision, backend='auto'|'tensorrt'|'onnxruntime')
    onnxruntime_backend.py  TensorRT EP -> CUDA EP -> CPU, threads from a parameter, IO binding on the GPU
    tensorrt_build.py       plans built on the target (fp32/fp16/int8 QDQ or calibrated), manifests, timing cache
    tensorrt_backend.py     plan execution with pycuda (pinned buffers, one stream, v2 bindings / v3 names)
    preprocess.py           image -> input tensor (letterbox, channel order, scale/mean/std) and back
    pillars.py              points -> pillars -> BEV canvas in numpy (both LiDAR conventions)
    decoders.py             outputs -> Detection2D / Object3D per io_convention
    detectors.py            load_detector(card): pre-process + backend(s) + decode, what the encoder nodes call
    build.py                `fmdrive build-engines`

Nothing here imports torch; tensorrt and pycuda are imported only when the TensorRT backend is asked for.
docs/model_cards.md describes the card and each convention for people bringing their own ONNX model.
"""
