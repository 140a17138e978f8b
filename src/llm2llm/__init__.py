"""llm2llm: grow a small fine-tuning dataset with the LLM2LLM loop (Lee et al., 2024, arXiv 2403.15042)."""

__version__ = "0.1.0"
