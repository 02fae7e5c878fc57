"""Jobs: the dispatcher, the worker role, BullMQ producer and workers, the embedded queue."""
