"""fruits: Fruits-360 style images -> MobileNetV2 features -> PCA, on Spark."""

__version__ = "0.1.0"
