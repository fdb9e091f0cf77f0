"""Texts for the writing tests (written for these tests)."""

ENGLISH = (
    "Many people think that homework should be banned, but i believe it is a important part of learning. "
    "First, homework helps students practise what they learned in class. For example, a student who solves "
    "ten maths problems at home remembers the method better the next day.\n\n"
    "Secondly, homework teaches responsability and time management. Students have to plan there evenings, "
    "and this is a skill they will need in college and at work. However, too much homework can cause stress, "
    "so teachers should give short tasks that that focus on the most important ideas.\n\n"
    "In conclusion, homework is useful when it is short and meaningful. Schools should keep it, but they should "
    "also listen to students and parents about how much is too much."
)
CHINESE = (
    "我认为学生应该多读书。首先，读书可以开阔我们的视野，让我们了解不同的文化和思想。其次,读书能提高写作能力，"
    "因为我们可以从好的文章中学习表达方法。例如，很多作家小时候都读了大量的书。\n\n"
    "但是，现在很多学生把时间花在手机上，很少读书。我们应该每天留出半小时读书。总之，读书对学生的成长非常重要。"
)
# Emoji (outside the BMP), combining characters (e + U+0301), CJK and Latin mixed.
TRICKY = (
    "Cafe\u0301 culture 😀 is great for students. i think the the best cafe\u0301s are quiet 📚 and cheap. "
    "学生喜欢在咖啡馆学习😀。Many students studys there every day, because it is a calm place to work."
)
