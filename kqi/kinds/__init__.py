"""Job kinds: what each kind adds to a job, one module each, registered in kqi/jobs/kinds.py.

training and inference are plain batch jobs; preprocessing turns its output folders into data;
notebook and TensorBoard are interactive services with a published port (kqi/kinds/interactive.py).
Importing this package registers every kind: the app factory and the scheduler do so once. A new
kind is a new module here and one more name below.
"""
from kqi.kinds import notebook, preprocessing, tensorboard, training  # noqa: F401  (each registers its kind)
