"""What a study is: the Study and its parts (choices, spaces, training arguments, datasets), loading a study
file, the identity a study is created with, the resources it loads (datasets, evaluators, base weights, a
fresh model and loss per trial) and the evaluation schedule its trials share. Its checks need no resources;
those that do are ``_validation``'s. Imports only ``_kinds``, the stored schema and ``exceptions`` of st-hpo."""
