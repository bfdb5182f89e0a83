"""What a task means to the loop and the scorers: the batch contract (inputs, targets and logits from any batch
and output, :mod:`.batches`)."""
