"""spark-submit entry point of the cross-match job; the parameters are in ``conf/templates/crossmatch.yaml``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit jobs/crossmatch.py \
        -p left=dp1.object -p right=dp1.gaia -p radius_arcsec=1 -p output=u_me.object_gaia
"""

import sys

from userbatch.facility.jobmain import job_main

if __name__ == "__main__":
    sys.exit(job_main("crossmatch"))
