"""The fixed sample on which ``encoder="fast"`` checks a fast path against fp32 eager before choosing it:
questions, dialogue turns and encyclopedia-style paragraphs of every length the retriever sees."""

from __future__ import annotations

__all__ = ["CALIBRATION_TEXTS"]

_PARAGRAPHS = (
    "The Lighthouse of Alexandria was a tower built by the Ptolemaic Kingdom during the reign of Ptolemy II "
    "Philadelphus. It has been estimated to have been at least 100 metres in overall height. One of the Seven "
    "Wonders of the Ancient World, for many centuries it was one of the tallest man-made structures in the "
    "world. The lighthouse was severely damaged by three earthquakes between 956 and 1323 and became an "
    "abandoned ruin. It was the third-longest surviving ancient wonder, after the Mausoleum at Halicarnassus "
    "and the extant Great Pyramid of Giza, surviving in part until 1480, when the last of its remnant stones "
    "were used to build the Citadel of Qaitbay on the site.",
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research "
    "on radioactivity. She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize "
    "twice, and the only person to win a Nobel Prize in two scientific fields. Her husband, Pierre Curie, was "
    "a co-winner of her first Nobel Prize, making them the first married couple to win the Nobel Prize.",
    "The 1994 FIFA World Cup was the 15th FIFA World Cup, the world championship for men's national soccer "
    "teams. It was hosted by the United States and took place from June 17 to July 17, 1994, at nine venues "
    "across the country. Brazil won the tournament after beating Italy 3-2 in a penalty shootout at the Rose "
    "Bowl in Pasadena, California, after the game had ended 0-0 after extra time, the first World Cup final "
    "to be decided on penalties.",
    "Photosynthesis is a process used by plants and other organisms to convert light energy into chemical "
    "energy that, through cellular respiration, can later be released to fuel the organism's activities. "
    "Some of this chemical energy is stored in carbohydrate molecules, such as sugars and starches, which "
    "are synthesized from carbon dioxide and water.",
    "Kind of Blue is a studio album by American jazz trumpeter Miles Davis. It was recorded on March 2 and "
    "April 22, 1959, at Columbia's 30th Street Studio in New York City, and released on August 17 of that "
    "year by Columbia Records. For the recording, Davis led a sextet featuring saxophonists John Coltrane and "
    "Julian Cannonball Adderley, pianist Bill Evans, bassist Paul Chambers, and drummer Jimmy Cobb, with "
    "pianist Wynton Kelly appearing on one track in place of Evans.",
    "Mount Kilimanjaro is a dormant volcano in Tanzania. It has three volcanic cones: Kibo, Mawenzi, and "
    "Shira. It is the highest mountain in Africa and the highest single free-standing mountain above sea "
    "level in the world: 5,895 m above sea level and about 4,900 m above its plateau base.",
    "The Treaty of Westphalia is the collective name for two peace treaties signed in October 1648 in the "
    "Westphalian cities of Osnabrück and Münster. They ended the Thirty Years' War and brought peace to the "
    "Holy Roman Empire, closing a calamitous period of European history that killed approximately eight "
    "million people. Scholars of international relations have identified the treaties as the origin of "
    "principles crucial to modern international relations, collectively known as Westphalian sovereignty.",
    "Python is a high-level, general-purpose programming language. Its design philosophy emphasizes code "
    "readability with the use of significant indentation. Python is dynamically typed and garbage-collected. "
    "It supports multiple programming paradigms, including structured, object-oriented and functional "
    "programming. Guido van Rossum began working on Python in the late 1980s as a successor to the ABC "
    "programming language and first released it in 1991.",
)

_SHORT = (
    "Who designed the lighthouse that stood in the harbour of Alexandria?",
    "Which scientist won Nobel Prizes in both physics and chemistry?",
    "In what year was the album featuring John Coltrane and Bill Evans released?",
    "What is the tallest free-standing mountain in the world?",
    "user: I need to renew my driving licence, what documents do I bring?",
    "assistant: You will need proof of identity and your current licence.",
    "when was she born?",
    "Where was the final of the 1994 World Cup played?",
    "The treaty that ended the Thirty Years' War",
    "user: can you remind me what we said about the trip to Lisbon last week?",
    "photosynthesis light energy",
    "Which programming language did Guido van Rossum create?",
)

CALIBRATION_TEXTS: tuple[str, ...] = _PARAGRAPHS + _SHORT
