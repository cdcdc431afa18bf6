"""From features to the app: train a classifier on a run's PCA features (Spark
ML), export one ONNX model from image to class probabilities, and classify
photos with it (no Spark, no TensorFlow)."""
