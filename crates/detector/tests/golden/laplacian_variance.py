"""Golden value for baseline::laplacian_variance (crates/detector/src/baseline.rs).

Independent NumPy version of `cv2.Laplacian(gray, cv2.CV_64F).var()` (ksize=1: the 4-neighbour
kernel, BORDER_REFLECT_101) on an unrounded BT.601 greyscale of a fixed 7x5 RGB pattern.
Run: python3 laplacian_variance.py > laplacian_variance.txt
(OpenCV 4 `cv2.Laplacian(gray, cv2.CV_64F).var()` on the same array prints 54603.19542627266.)
"""
import numpy as np

w, h = 7, 5
y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
rgb = ((x * 37 + y * 91 + c * 53) % 256).astype(np.float64)
gray = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
p = np.pad(gray, 1, mode="reflect")  # numpy "reflect" == OpenCV BORDER_REFLECT_101
lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * gray
print(repr(float(lap.var())))
