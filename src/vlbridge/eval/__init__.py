"""Running a model over a dataset: generation of answers and their scores."""
