"""Training pipeline: data spec -> SFT/DPO LoRA adapters -> evaluation -> published, versioned adapters."""
