"""What a study is: the Study and its parts (choices, spaces, training arguments, datasets), loading a study
file, and the identity a study is created with. Imports only ``_kinds`` and ``exceptions`` of st-hpo."""
