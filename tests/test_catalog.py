"""The table catalog on both databases: names, visibility, ownership."""

import pytest

from userbatch.errors import AccessDenied, InvalidName, TableExists, TableNotFound, UserbatchError
from userbatch.tables.catalog import Catalog, TableEntry
from userbatch.tables.names import parse_table_name


@pytest.mark.parametrize("name", [
    "../etc.passwd", "dp1/../x.y", "dp1.object;drop", "DP1.object", "dp1.", ".object", "dp1.ob ject", "dp1",
    "a.b.c", "dp1.`x`", "dp1.x'", "1dp.object", "", "dp1.\u00e9t\u00e9", "dp1." + "x" * 64, None,
])
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidName):
        parse_table_name(name)


def test_good_name():
    assert parse_table_name("dp1.forced_source") == ("dp1", "forced_source")


def test_register_get_list_drop(db_url):
    cat = Catalog()
    e = cat.register(TableEntry(name="dp1.object", location="/x/dp1/object", partition_order=5,
                                properties={"id_column": "objectId"}))
    assert e.owner == "tester" and e.created_at is not None
    got = cat.get("dp1.object")
    assert got.location == "/x/dp1/object" and got.partition_order == 5 and got.properties == {"id_column": "objectId"}
    with pytest.raises(TableExists):
        cat.register(TableEntry(name="dp1.object", location="/y"))
    cat.register(TableEntry(name="ref.gaia", location="/x/ref/gaia", ra_column="ra", dec_column="dec"))
    assert [t.name for t in cat.list()] == ["dp1.object", "ref.gaia"]
    assert [t.name for t in cat.list("ref")] == ["ref.gaia"]
    cat.update("dp1.object", description="updated")
    assert cat.get("dp1.object").description == "updated"
    cat.drop("dp1.object")
    with pytest.raises(TableNotFound, match="tables list"):
        cat.get("dp1.object")


def test_visibility_and_ownership(db_url):
    alice = Catalog(user="alice", groups=("dm",))
    alice.register(TableEntry(name="u_alice.private", location="/a/p", visibility="private"))
    alice.register(TableEntry(name="u_alice.shared", location="/a/s", visibility="group", group="dm"))
    alice.register(TableEntry(name="u_alice.public", location="/a/q"))
    bob = Catalog(user="bob", groups=())
    carol = Catalog(user="carol", groups=("dm",))
    assert [t.name for t in bob.list()] == ["u_alice.public"]
    assert [t.name for t in carol.list()] == ["u_alice.public", "u_alice.shared"]
    with pytest.raises(TableNotFound, match="no table named u_alice.private"):  # a 404, not "belongs to alice"
        bob.get("u_alice.private")
    with pytest.raises(AccessDenied):
        carol.drop("u_alice.shared")  # may read, may not drop
    with pytest.raises(AccessDenied):
        bob.update("u_alice.public", description="mine now")
    assert alice.get("u_alice.private").visibility == "private"


def test_entry_validation():
    with pytest.raises(UserbatchError, match="format"):
        TableEntry(name="a.b", location="/x", format="csv")
    with pytest.raises(UserbatchError, match="group"):
        TableEntry(name="a.b", location="/x", visibility="group")
