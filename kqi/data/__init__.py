"""What jobs read: uploaded data items and their blobs, datasets, git sources and image registries."""
