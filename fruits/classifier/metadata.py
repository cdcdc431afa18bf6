"""The metadata keys of the app's ONNX model (written by export, read by predict)."""

LABELS = "fruits.labels"  # JSON list: class index -> label
IMAGE_SIZE = "fruits.image_size"  # the input's side in pixels
INPUT = "fruits.input"  # the input tensor, in words
PRECISION = "fruits.precision"  # fp32 or int8 backbone
WEIGHTS_SHA256 = "fruits.backbone_weights_sha256"  # the Keras weights the backbone was written from
PCA_K = "fruits.pca_k"
TEST_ACCURACY = "fruits.test_accuracy"  # `fruits train`'s accuracy on its test set
FRUITS_VERSION = "fruits.version"
