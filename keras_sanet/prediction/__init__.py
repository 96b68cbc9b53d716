"""`keras-sanet predict`: segment image files into colour masks and overlays."""
