"""Training and inference: plain batch jobs. Everything they do is what every job does (the job
contract, kqi/jobs/); an inference differs only in the lists it appears in and the value it may
leave in /kqi/output/value.txt, which the history reads for any kind."""
from kqi.jobs.kinds import JobKind, register


class BatchKind(JobKind):
    def __init__(self, name: str, noun: str):
        self.name, self.noun = name, noun


TRAINING = register(BatchKind("training", "trainings"))
INFERENCE = register(BatchKind("inference", "inferences"))
