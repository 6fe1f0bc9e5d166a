"""Results out of a campaign: inferred labels, annotations, labelers and the final model as files; predictions
of the final model on new inputs. Everything is read from the run's store; nothing is refitted."""
from robust_al.export.model import load_model, predict_file, run_learner
from robust_al.export.tables import FORMATS, export_run

__all__ = ["FORMATS", "export_run", "load_model", "predict_file", "run_learner"]
