"""Tiny MovieLens-layout data sets written by the tests themselves (real MovieLens files are
never committed), and helpers to read a Dataset back in external ids."""

from __future__ import annotations

from pathlib import Path

from batch.data.interactions import Dataset, Interactions

# user, item, rating, timestamp. Item 30 is rated only in ua.test; item 40 is listed in
# u.item but never rated; item 99 is rated but missing from u.item.
UA_BASE = [(1, 10, 5, 100), (1, 20, 3, 110), (2, 10, 4, 150), (3, 20, 1, 170), (3, 99, 2, 171)]
UA_TEST = [(1, 30, 3, 200), (2, 20, 2, 160)]
U_USER = "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|writer|T2K5W\n4|60|F|other|\n"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def flags(*names: str) -> str:
    return "|".join("1" if g in names else "0" for g in GENRES)


U_ITEM = (f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags('Animation', 'Comedy')}\n"
          f"20|GoldenEye (1995)|01-Jan-1995||http://y|{flags('Action', 'Thriller')}\n"
          f"30|Café Society (1968)|01-Jan-1968||http://z|{flags('Drama')}\n"
          f"40|Unknown date||||{flags('unknown')}\n")


def tsv(rows) -> str:
    return "".join("\t".join(map(str, r)) + "\n" for r in rows)


def write_ml100k(root: Path, *, genre_file: bool = True, occupation_file: bool = True) -> Path:
    """A MovieLens-100k directory: u.data = ua.base + ua.test, plus u.user, u.item (latin-1)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "u.data").write_text(tsv(UA_BASE + UA_TEST))
    (root / "ua.base").write_text(tsv(UA_BASE))
    (root / "ua.test").write_text(tsv(UA_TEST))
    (root / "u.user").write_text(U_USER)
    (root / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    if genre_file:
        (root / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES)) + "\n")
    if occupation_file:
        (root / "u.occupation").write_text("other\ntechnician\nwriter\n")
    return root


def write_ml1m(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                      "2::1193::4::978298413\n2::3408::4::978300275\n")
    (root / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n"
                                    "3::M::25::15::55117\n")
    (root / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3408::Erin Brockovich (2000)::Drama\n"
        "5::Amélie::Comedy|Romance\n".encode("latin-1"))
    return root


def write_ml_latest(root: Path) -> Path:
    """A MovieLens latest directory (ml-latest-small's layout) with a tags file topx ignores."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n"
                                      "1,3,4.5,964981247\n2,3,0.5,1445714994\n2,193609,3.0,1537799250\n")
    (root / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        '193609,"Andrew Dice Clay: Dice Rules (1991) ",(no genres listed)\n'
        "5,Amélie,Comedy|Romance\n", encoding="utf-8")
    (root / "tags.csv").write_text("userId,movieId,tag,timestamp\n2,3,funny,1445714994\n")
    return root


def rows(ds: Dataset, inter: Interactions) -> list[tuple]:
    """Interactions as sorted (user id, item id, rating, timestamp) tuples."""
    return sorted(zip(ds.users.ids[inter.user].tolist(), ds.items.ids[inter.item].tolist(),
                      inter.rating.tolist(), inter.timestamp.tolist(), strict=True))


def feature_names(table, idmap, external) -> set[str]:
    """Names of the non-zero features of one entity."""
    row = table.matrix[int(idmap.index([external])[0])]
    return {table.columns[c] for c in row.indices[row.data != 0]}
