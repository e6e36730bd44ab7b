"""spark-submit entry point of the train_classifier job; parameters in ``conf/templates/train_classifier.yaml``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit jobs/train_classifier.py \
        -p features=u_me.fs_stats -p labels=dp1.object -p label_column=variability_class -p model_name=varclass
"""

import sys

from userbatch.facility.jobmain import job_main

if __name__ == "__main__":
    sys.exit(job_main("train_classifier"))
