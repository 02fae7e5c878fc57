"""Socket.IO: the server the api mounts, the notifier every process pushes through."""
