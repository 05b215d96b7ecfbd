"""The vocabulary of the mail corpus (bench/corpus.py): words, names, domains,
subjects, reply prefixes and attachment types. Their order matters: the corpus
draws from them by index with its seeded generators."""

from __future__ import annotations

WORDS = (  # noqa: SIM905
    "the of and to in is that for it as was with be by on not he I this are or his from at "
    "which but have an they you were her she there been one all we their has would when if so "
    "no will can more other what time up about than into them only some could new order invoice "
    "delivery account password refund shipping tracking number please thanks issue problem help "
    "question update price subscription cancel renew plan support ticket urgent today tomorrow "
    "meeting schedule contract quote offer discount payment received attached file report "
    "monthly server login error page browser download install version customer service team "
    "office week Monday Friday morning afternoon regards best kind bestelling factuur levering "
    "graag bedankt vraag probleem rekening betaling Bestellung Rechnung Lieferung größer Grüße "
    "Straße schön Frühstück über für café naïve résumé façade déjà vu señor niño jalapeño Ærø "
    "smørrebrød Łódź Kraków Привет спасибо заказ 注文 ありがとう 发票 谢谢 😀 ✓ €"
).split()

FIRST = (  # noqa: SIM905
    "Anna Bram Carla Daan Eva Finn Greta Hugo Iris Jan Kim Lars Mila Noah Olga Piet Quinn Rosa "
    "Sven Tess Umar Vera Wim Xena Yara Zoë Jürgen Sören José Łukasz Søren Chloé Renée François "
    "Ömer Ágnes Siobhán Владимир Наталья 王 美咲 Þóra"
).split()

LAST = (  # noqa: SIM905
    "Jansen Smit Visser Bakker Meijer Mulder Bos Vos Peters Hendriks Müller Schäfer Groß Dvořák "
    "Nowak Wójcik García Peña Øster Lindqvist Åberg O'Brien Mäkinen Köhler Иванов 小明 田中 "
    "Þórsdóttir Brontë"
).split()

DOMAINS = [
    "customer.example.com",
    "example.org",
    "mail.example.net",
    "shop.example.de",
    "kunde.example.nl",
    "example.co.uk",
    "universidad.example.es",
    "firma.example.pl",
    "büro.example.de",
]

SUBJECTS = (
    "Question about my order",
    "Invoice {n} is wrong",
    "Cannot log in",
    "Refund request for order #{n}",
    "Delivery delayed",
    "Vraag over factuur {n}",
    "Problem mit der Lieferung",
    "Grüße und eine Frage zur Rechnung",
    "Subscription renewal",
    "Urgent: server down since this morning",
    "Feature request: export to CSV",
    "Wrong size, need an exchange",
    "Password reset does not arrive",
    "Meeting next week?",
    "Contract {n} – signed copy",
    "Réclamation commande {n}",
    "Заказ {n} не доставлен",
    "注文番号 {n} について",
    "Thanks! 😀",
    "Pricing for 50 seats",
)

REPLY_PREFIXES = ("Re: ", "Re: ", "Re: ", "RE: ", "AW: ", "Antw: ", "Re: Re: ", "Fwd: ")

ATTACHMENT_TYPES = (
    ("application/pdf", "pdf"),
    ("application/pdf", "pdf"),
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
    ("text/csv", "csv"),
    ("text/calendar", "ics"),
)
