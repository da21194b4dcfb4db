"""Runtime and model artifacts: tiny GGUF models, manifests, compression, the llama-server build."""
