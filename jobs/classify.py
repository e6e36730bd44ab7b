"""spark-submit entry point of the classify job; parameters in ``conf/templates/classify.yaml``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit jobs/classify.py -p source=u_me.fs_stats -p model=varclass \
        -p output=u_me.classes
"""

import sys

from userbatch.facility.jobmain import job_main

if __name__ == "__main__":
    sys.exit(job_main("classify"))
