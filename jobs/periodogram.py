"""spark-submit entry point of the periodogram job; the parameters are in ``conf/templates/periodogram.yaml``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit jobs/periodogram.py \
        -p source=dp1.forced_source -p output=u_me.x
"""

import sys

from userbatch.facility.jobmain import job_main

if __name__ == "__main__":
    sys.exit(job_main("periodogram"))
