"""Generation: the hf backend, the vLLM engine (a child process) and LoRA serving."""
