"""Publishing: Hub push and the model card."""
