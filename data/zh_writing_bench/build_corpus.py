"""Writes corpus.jsonl, queries.jsonl and qrels/test.tsv of the writing-course retrieval set.

All passages and questions were written for tutorstack (CC0 1.0, see README.md). Each entry:
(doc id, title, text, [questions that this passage answers]). Questions paraphrase rather than
copy the passage, so lexical overlap alone is not enough.
"""
import json
from pathlib import Path

DOCS = [
("zh01", "议论文的三要素", "议论文由论点、论据和论证三部分组成。论点是作者的主张，论据是支持主张的材料，论证是把材料和主张联系起来的推理过程。缺少任何一部分，文章都难以说服读者。",
 ["议论文由哪几个部分构成？", "一篇说理文章需要具备哪些基本要素", "论点论据论证分别指什么"]),
("zh02", "如何提出中心论点", "中心论点通常放在开头段，用一句完整的判断句表达。好的论点态度鲜明、范围适中，能够被证明，而不是人人都同意的常识。",
 ["文章的核心观点应该写在哪里，怎么表述？", "怎样的主张才算一个好的论点", "开头怎么亮明观点"]),
("zh03", "事实论据与道理论据", "事实论据包括具体的事例、统计数据和历史事件；道理论据包括经典名言、科学原理和公认的道理。两类论据结合使用，文章既有说服力又有深度。",
 ["举例子和引用名言属于哪种论据", "数据和历史事件可以作为什么材料来支持观点"]),
("zh04", "举例论证", "举例论证是用典型、真实的事例来证明论点。选例要少而精，叙述要简洁，并且在例子之后说明它如何支撑论点，避免只讲故事不做分析。",
 ["用事例证明观点时要注意什么", "为什么讲完故事还要分析"]),
("zh05", "对比论证", "对比论证把两种相反或不同的事物放在一起比较，突出正确观点的合理性。例如把坚持锻炼的人和久坐不动的人进行比较，说明运动的好处。",
 ["把正反两方面放在一起比较是什么论证方法", "怎样通过比较来突出观点"]),
("zh06", "比喻论证", "比喻论证用人们熟悉的事物打比方，把抽象的道理讲得形象易懂。比喻要贴切，不能只追求生动而偏离论点。",
 ["打比方说理有什么要求", "怎样把抽象的道理讲得通俗形象"]),
("zh07", "分论点的安排", "分论点是对中心论点的分解，可以按并列、递进或正反的关系排列。每个分论点单独成段，段首点明，段中用论据支撑。",
 ["几个小观点之间可以怎样排列顺序", "每一段开头应该写什么"]),
("zh08", "过渡与衔接", "段落之间要用过渡句或关联词连接，例如“不仅如此”“与此相反”“由此可见”。恰当的衔接让读者看清文章的思路，不会觉得跳跃。",
 ["段与段之间怎么连接才不显得突兀", "常用的关联词有哪些"]),
("zh09", "开头的写法", "议论文开头常见的方法有开门见山、引用名言、设问引入和由事入理。无论哪种方法，都要尽快引出中心论点，不宜铺垫过长。",
 ["文章第一段有哪些常见写法", "开篇铺垫太长会有什么问题"]),
("zh10", "结尾的写法", "结尾段要总结全文、回应开头，并可以提出希望或号召。不要在结尾引入新的论据，也不要简单重复前文的句子。",
 ["文章最后一段应该写些什么", "收尾时能不能再加新的例子"]),
("zh11", "记叙文的六要素", "记叙文要交代时间、地点、人物、事件的起因、经过和结果。六要素清楚，读者才能明白发生了什么。",
 ["写一件事要交代清楚哪些要素", "叙事文章的六个要素是什么"]),
("zh12", "细节描写", "细节描写抓住人物的动作、语言、神态或环境中的细微之处进行刻画。一个传神的细节往往比大段概括更能打动读者。",
 ["怎样把人物写得生动传神", "为什么小细节比概括更感人"]),
("zh13", "景物描写", "景物描写要调动视觉、听觉、嗅觉等多种感官，按照一定的顺序展开，并借景抒情，使景物与人物心情相呼应。",
 ["描写风景时可以调动哪些感官", "如何让景色和心情结合起来"]),
("zh14", "说明文的说明方法", "说明文常用的说明方法有举例子、列数字、作比较、打比方、分类别和下定义。选择方法要服务于把事物特征说清楚。",
 ["介绍一个事物时有哪些常用方法", "下定义和分类别属于什么文体的写作方法"]),
("zh15", "引用与注明出处", "引用他人的观点、数据或原文时，必须注明作者、书名或文章名、出版信息和页码。直接引用要加引号，间接引用也要标注来源。",
 ["借用别人的话要怎样标注来源", "转述别人的观点需要注明出处吗"]),
("zh16", "学术诚信", "把别人的文字或想法当作自己的成果提交就是抄袭。即使改写了句子，只要使用了他人的观点，也应该注明来源。学校对抄袭有明确的处罚规定。",
 ["什么行为算是抄袭", "改写别人的句子还需要标注吗"]),
("zh17", "修改文章的步骤", "修改时先看整体：论点是否明确、结构是否合理；再看段落：每段是否围绕一个意思；最后看语句：用词是否准确，标点是否规范。",
 ["改作文应该按什么顺序进行", "检查文章时先看大处还是先看字句"]),
("zh18", "朗读修改法", "把文章大声读出来，是发现语病的有效方法。读起来拗口、停顿别扭的地方，往往就是句子成分残缺或搭配不当的地方。",
 ["怎样找出句子中的语病", "念出声来修改文章有什么好处"]),
("zh19", "常见语病", "常见的语病有成分残缺、搭配不当、语序不当、句式杂糅和前后矛盾。例如“通过这次活动，使我明白了道理”就缺少主语。",
 ["病句有哪些常见类型", "“通过……使……”这种句子错在哪里"]),
("zh20", "标点符号的用法", "句号表示陈述句结束，逗号表示句中停顿，顿号用于并列词语之间，分号用于并列分句之间，冒号用于提示下文。引号标明引用的内容。",
 ["顿号和逗号怎么区分", "分号用在什么地方"]),
("zh21", "概括段落大意", "概括段意时先找出段落的中心句；如果没有中心句，就抓住主要人物和主要事件，用一句简洁的话说明这一段讲了什么。",
 ["怎样总结一段话的主要意思", "没有中心句的段落如何概括"]),
("zh22", "写读后感", "读后感要先简要介绍读的内容，再选一个最有感触的点展开，联系自己的生活或社会现实谈体会。重点在“感”，不要大段复述原文。",
 ["读完一本书后怎么写感想", "读后感的重点应该放在哪里"]),
("zh23", "书信的格式", "书信由称呼、正文、结尾祝颂语、署名和日期组成。称呼顶格写，正文另起一行空两格，署名和日期写在右下方。",
 ["写信的格式是什么", "信的署名和日期写在哪个位置"]),
("zh24", "演讲稿的特点", "演讲稿要针对听众，观点鲜明，语言口语化，多用短句和设问，适当使用排比增强气势，并控制好篇幅与时间。",
 ["给大家讲话的稿子有什么特点", "怎样让演讲更有感染力"]),
("zh25", "时间管理与写作计划", "写长篇作业时，把任务拆成选题、查资料、写提纲、写初稿和修改几个阶段，并为每个阶段设定截止时间，可以避免最后一刻赶工。",
 ["大作业怎样安排时间才不会临时抱佛脚", "写论文可以分成哪些阶段"]),
("zh26", "写提纲", "动笔之前先列提纲，写下中心论点、各分论点以及每段准备使用的论据。提纲能帮助检查结构是否完整，避免写到一半跑题。",
 ["动笔前为什么要先列大纲", "防止文章跑题的方法"]),
("zh27", "同伴互评", "同伴互评时先肯定文章的优点，再具体指出一两个需要改进的地方，并给出修改建议。评价要针对文章而不是针对作者。",
 ["给同学的作文提意见应该怎么说", "互相评改时要注意什么"]),
("zh28", "论证中的逻辑错误", "常见的逻辑错误包括以偏概全、偷换概念、因果倒置和诉诸权威。用一个例子得出普遍结论，就是以偏概全。",
 ["只凭一个例子下结论犯了什么错误", "说理时容易出现哪些推理毛病"]),
("zh29", "反驳与让步", "承认对方观点中合理的部分，再指出其不足，这种让步后反驳的写法能使论证更全面，也更容易让持不同意见的读者接受。",
 ["怎样回应不同的意见", "先承认对方有道理再反驳有什么好处"]),
("zh30", "古诗的意象", "意象是寄托了诗人情感的客观物象。例如月亮常常寄托思乡之情，柳树常常表示离别，菊花象征高洁。读诗要抓住意象体会情感。",
 ["诗歌里的月亮和柳树通常表达什么", "读古诗怎么体会诗人的感情"]),
("zh31", "文言文的实词与虚词", "文言实词包括名词、动词、形容词等，有一词多义和古今异义现象；虚词如“之”“其”“而”“以”，主要起语法作用，要结合上下文判断用法。",
 ["古文中的“之”“而”属于哪类词", "文言文里一个词有多种意思怎么办"]),
("zh32", "摘要的写法", "学术论文的摘要用两三百字说明研究的目的、方法、主要结果和结论。摘要要独立成文，不引用图表，不加评论。",
 ["论文开头的概述部分要包含什么", "学术文章的摘要写多长"]),
("zh33", "文献综述", "文献综述不是把文献一篇篇罗列，而是按照主题归纳已有研究的观点和方法，指出它们之间的联系与不足，从而引出自己的研究问题。",
 ["整理前人研究时不能只是简单堆砌吗", "怎样写研究背景部分的综述"]),
("zh34", "图表的使用", "图表要有编号和标题，正文中要先提到再出现，并解释图表说明了什么。数据来源要在图表下方注明。",
 ["文章里放图表要注意哪些规范", "表格的数据出处写在哪里"]),
("zh35", "口语化与书面语", "作文中要避免过多的网络用语和口头禅，例如“超级”“然后然后”。书面语要求用词准确、句式完整，但也不必刻意堆砌华丽辞藻。",
 ["作文里能用网络流行语吗", "写作时怎样避免说话太随意"]),
("en01", "Thesis statements", "A thesis statement is one or two sentences near the end of the introduction that state the essay's main claim. A strong thesis is specific, arguable and previews the reasons that the body paragraphs will develop.",
 ["Where does the main claim of an essay usually go?", "What makes a thesis statement strong?", "论文的thesis statement应该放在哪里"]),
("en02", "Topic sentences", "Each body paragraph opens with a topic sentence that states the paragraph's single point and links it back to the thesis. The rest of the paragraph gives evidence and explains how that evidence supports the point.",
 ["How should a body paragraph begin?", "What is the job of the first sentence of a paragraph?"]),
("en03", "Citing sources in APA style", "APA style uses author-date in-text citations, such as (Smith, 2020, p. 14), and a reference list ordered alphabetically by the first author's surname. Every source cited in the text must appear in the reference list.",
 ["How do I cite a source in the text with APA?", "How is the bibliography ordered in APA format?", "APA格式的参考文献怎么排序"]),
("en04", "Avoiding plagiarism", "Plagiarism means presenting someone else's words or ideas as your own. Paraphrasing without a citation is still plagiarism. Quote exact words in quotation marks and cite every borrowed idea.",
 ["Is rewording someone's idea without credit acceptable?", "What counts as copying in academic work?"]),
("en05", "Revising a draft", "Revise in passes: first the argument and structure, then each paragraph's focus, and last the sentences, word choice and punctuation. Reading the draft aloud helps you hear awkward or incomplete sentences.",
 ["In what order should I edit my essay?", "How can I spot clumsy sentences in my writing?"]),
("en06", "Counterarguments", "Addressing a counterargument shows that you have considered other views. State the opposing view fairly, concede what is reasonable, then explain why your position still holds.",
 ["How do I deal with people who disagree with my argument?", "Why should an essay mention the other side?"]),
("en07", "Conclusions", "A conclusion restates the thesis in new words, sums up the main reasons and explains why the argument matters. Avoid introducing new evidence in the final paragraph.",
 ["What goes in the last paragraph of an essay?", "Can I add new evidence at the end?"]),
("en08", "Transitions", "Transitions such as however, in addition, for example and as a result show how ideas relate. Use them at the start of paragraphs and between sentences so readers can follow the line of reasoning.",
 ["Which words help connect ideas between sentences?", "How do I make my essay flow better?"]),
("en09", "Writing an abstract", "An abstract of 150 to 250 words summarises the purpose, methods, main results and conclusion of a paper. It should stand alone, without citations or references to figures.",
 ["What should the summary at the start of a research paper contain?", "How long is an abstract?"]),
("en10", "Logical fallacies", "Common fallacies include hasty generalisation, drawing a broad conclusion from one example; the straw man, attacking a distorted version of an opponent's view; and false cause, assuming that what came first caused what came after.",
 ["What is it called when you generalise from a single case?", "Which reasoning errors should I avoid in arguments?"]),
]

root = Path(__file__).parent
with open(root / "corpus.jsonl", "w", encoding="utf-8") as corpus, \
        open(root / "queries.jsonl", "w", encoding="utf-8") as queries, \
        open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels:
    qrels.write("query-id\tcorpus-id\tscore\n")
    n = 0
    for doc_id, title, text, questions in DOCS:
        corpus.write(json.dumps({"_id": doc_id, "title": title, "text": text}, ensure_ascii=False) + "\n")
        for question in questions:
            n += 1
            queries.write(json.dumps({"_id": f"q{n:03d}", "text": question}, ensure_ascii=False) + "\n")
            qrels.write(f"q{n:03d}\t{doc_id}\t1\n")
print(f"{len(DOCS)} passages, {n} queries")
