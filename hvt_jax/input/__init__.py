"""tf.data input pipelines: one view builder per model family."""
