"""The results store: schema and migrations, the database's reads, the single writer, files."""
from .db import INITIAL_STEP, ResultsDB, effective_status
from .files import load_arrays, load_state, save_arrays, save_state
from .writer import Heartbeat, Outbox, Writer, job_folder

__all__ = ["INITIAL_STEP", "ResultsDB", "effective_status", "load_arrays", "load_state", "save_arrays", "save_state",
           "Heartbeat", "Outbox", "Writer", "job_folder"]
