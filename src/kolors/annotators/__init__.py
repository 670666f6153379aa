"""Control maps for ControlNets ("annotators", "preprocessors"): canny edges, MiDaS depth and DWPose pose maps
made from photos, in :mod:`kolors.annotators.maps` (pose drawing in :mod:`kolors.annotators.pose`)."""
