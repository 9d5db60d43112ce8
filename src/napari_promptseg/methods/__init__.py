"""Methods: numpy/torch only, no Qt, no napari. They take model protocols, not concrete backends."""
