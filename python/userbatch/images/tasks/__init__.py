"""Pure-Python PipelineTasks for the image side-car: postage stamps, background re-estimation, injection."""
