"""The exporter: a model source (GGUF file or Hugging Face folder) -> an edgedec bundle.

    sources.load_source(path)      -> Source: config, lazily dequantized weights, tokenizer
    graphs.build_segment(...)      -> ONNX graph for a layer range (embedding and/or head attached)
    quant.quantize_int4/int8(...)  -> packed weights plus their measured error
    bundle_writer.export_bundle(.) -> the bundle directory, written atomically
"""
