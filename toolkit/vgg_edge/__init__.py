"""vgg-edge: VGG16 transfer learning for medical images, exported, verified and run at the edge.

TensorFlow is heavy and chatty: it is imported lazily, only by the modules that train or
convert, and its C++ logging is silenced before the first import anywhere in the package.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"
