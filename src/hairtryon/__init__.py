"""hairtryon: put the hairstyle of one photo (the source) onto the person in another (the target).

The method, one module per stage (paper: "Realistic Hairstyle Try-On: Face and Hair Image
Mapping Using Semantic Maps for SDEdit"):

=====================  =========================================================
``segmentation``       3.1    semantic maps, 5 classes (BiSeNet or the paper's U-Net)
``landmarks``          3.2.1  MediaPipe Face Mesh, 4 points
``alignment``          3.2.2  perspective transform of the source onto the target
``compositing``        3.2.3-3.2.4  cropping by the maps, replacing
``inpainting``         3.3.1  artifacts by re-parsing, fast-marching fill
``refinement``         3.3.2  SDEdit
``pipeline``           all of the above, at full resolution
=====================  =========================================================
"""
__version__ = "0.1.0"

from .errors import HairTryOnError, ImageLoadError, NoFaceFound, WeightsError  # noqa: E402
from .images import load_image, save_image  # noqa: E402

__all__ = ["HairTryOnError", "ImageLoadError", "NoFaceFound", "WeightsError", "load_image", "save_image",
           "__version__"]
